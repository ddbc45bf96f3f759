"""Names shared by several layers: activation sites and the label of the untrained model."""

# the output of the MLP's up projection: the paper's regularized and probed site
MLP_UP_PROJ = "mlp.up_proj"
# every activation site decpo can hook (see `decpo.models.hooks.site_module`)
SITES = (MLP_UP_PROJ, "mlp.hidden", "mlp.out", "resid_post")
# the label of the base (untrained) model in experiments, probes and reports
BASE = "base"

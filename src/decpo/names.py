"""Names shared by several layers: activation sites, the label of the untrained model and of a seed's model."""

# the output of the MLP's up projection: the paper's regularized and probed site
MLP_UP_PROJ = "mlp.up_proj"
# every activation site decpo can hook (see `decpo.models.hooks.site_module`)
SITES = (MLP_UP_PROJ, "mlp.hidden", "mlp.out", "resid_post")
# the label of the base (untrained) model in experiments, probes and reports
BASE = "base"


def split_label(label: str) -> tuple[str, int | None]:
    """A model's label as experiments write it, ``<method>-s<seed>``, split into method and seed: ``"dpo-s2"`` ->
    ``("dpo", 2)``, ``"decpo-w0.3-s0"`` -> ``("decpo-w0.3", 0)``, ``"base"`` -> ``("base", None)``."""
    head, sep, tail = label.rpartition("-s")
    if sep and head and tail.isdigit():
        return head, int(tail)
    return label, None

"""Text scorers: offline classifiers (toxicity, sentiment), fluency and diversity, a YES/NO judge."""

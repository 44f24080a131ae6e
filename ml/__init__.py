"""What runs in the trainer/serving image: the model, continual-learning strategies, data
loading, training/evaluation commands and the BentoML service. Never imports ``airflow``."""

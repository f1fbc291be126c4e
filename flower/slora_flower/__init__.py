"""SLoRA on Flower: the ServerApp and ClientApp of the pipeline's methods (see pyproject.toml)."""

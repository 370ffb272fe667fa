"""learnforget: what does finetuning teach a language model, what does it make it forget,
and which method should you use? Full finetuning vs LoRA, measured on your model and data."""

__version__ = "0.1.0"

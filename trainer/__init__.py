"""Training for hsafast (installed as ``hsafast.trainer``)."""

"""What the machine does, over the stores: no Lambda, FastAPI or boto3 wiring here."""

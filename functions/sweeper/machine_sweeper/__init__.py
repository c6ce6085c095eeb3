"""The sweeper Lambda (EventBridge schedule): requeues tasks whose runner was lost."""

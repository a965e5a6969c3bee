"""The OpenAI chat-completions dialect."""

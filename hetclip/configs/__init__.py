"""Shipped configs (Python files with get_config); load them with hetclip.config.load_config."""

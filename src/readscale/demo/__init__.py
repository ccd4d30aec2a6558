"""The reference read-heavy service and the demo that measures what each layer absorbs."""

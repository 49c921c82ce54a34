"""Database access: migrations, batched COPY writers and readers."""

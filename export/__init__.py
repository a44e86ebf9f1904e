"""The shipped export profiles (``python -m qdukd.export --target NAME``), installed as the data
package ``qdukd.profiles`` (see pyproject.toml); qdukd.resources finds them by name."""

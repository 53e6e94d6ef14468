"""The Textual app (DESIGN §9). Importing this package imports textual but never torch."""

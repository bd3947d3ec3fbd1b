"""Ray actor classes: thin shells over `rayda` functions. Importing this package imports no Ray."""

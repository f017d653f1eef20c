"""The PySide6 front end: thin views over the headless core in `workbench`."""

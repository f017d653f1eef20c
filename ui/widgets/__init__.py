"""Widgets that pages are built from but that are not pages themselves: the prompt list, a
response pane, the SFT example editor, generation settings and the Try-it box."""

"""One module a page; each page takes the WorkbenchSession in its constructor and listens to it."""

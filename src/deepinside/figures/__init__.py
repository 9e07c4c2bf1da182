"""The book's figures, tables and widgets (computation lives in methods/ and measures/)."""

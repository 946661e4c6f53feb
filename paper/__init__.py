"""paper: the manuscript, regenerated from recorded results (figures, tables, numbers)."""

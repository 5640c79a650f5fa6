"""Pieces shared by several d2ext models (one home each)."""

"""Evaluation: held-out Samples scored with our AST reward, BFCL categories with BFCL's own checker."""

"""Rewrite passes over the onnx-graphsurgeon graph."""

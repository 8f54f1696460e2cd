"""Bridges for agents that have no hooks: terminal panes and file channels."""

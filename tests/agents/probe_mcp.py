"""A one-tool MCP server over stdio, so tests can see how each program names and calls
an MCP tool without a broker behind it.

Run as ``python -m tests.agents.probe_mcp``. Its tool ``mesh_probe`` answers
`PROBE_ANSWER` followed by the ``word`` it was given.
"""

from __future__ import annotations

from mcp.server.fastmcp import FastMCP

SERVER = "meshprobe"
TOOL = "mesh_probe"
PROBE_ANSWER = "probe-answer-7f3a"

app = FastMCP(SERVER)


@app.tool(name=TOOL, description="Answers a fixed token and the word given; used by tests.")
def mesh_probe(word: str = "") -> str:
    """The fixed answer and ``word``, so a test can find both in the next model request."""
    return f"{PROBE_ANSWER} {word}".strip()


if __name__ == "__main__":
    app.run("stdio")

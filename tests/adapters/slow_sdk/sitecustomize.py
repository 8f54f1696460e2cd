"""For one test: the MCP SDK's import waits until the test opens the FIFO named by
MESH_TEST_SDK_GATE for writing, so the test sees what `mesh mcp` answers before the
SDK is there."""

import os
import sys


class Gate:
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - importlib protocol
        if name == "mcp" and os.environ.get("MESH_TEST_SDK_GATE"):
            sys.meta_path.remove(self)
            with open(os.environ["MESH_TEST_SDK_GATE"]) as gate:  # blocks until a writer opens it
                gate.read()
        return None


sys.meta_path.insert(0, Gate())

"""Where a C++ compiler exists, the shipped native kernels must compile and load.

The native tests skip when the engine is unavailable (the torch engines then answer), so without
this check a C++ source that no longer compiles would only show up as skipped tests.
"""

import pytest

from gnnreco.graph import _native, module_map
from gnnreco.utils import native

pytestmark = pytest.mark.skipif(native.compiler() is None or native.disabled(),
                                reason="no C++ compiler, or GNNRECO_NO_NATIVE set")


def test_knn_kernel_compiles_and_loads():
    assert _native.lib() is not None, f"native kNN engine failed to build: {_native._LIB.reason}"


def test_module_map_kernel_compiles_and_loads():
    assert module_map._NATIVE.get() is not None, \
        f"native module-map kernel failed to build: {module_map._NATIVE.reason}"

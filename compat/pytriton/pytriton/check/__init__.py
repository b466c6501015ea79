"""PyTriton's ``pytriton.check`` package: `pytriton.check.utils`, the helpers of PyTriton's functional tests."""

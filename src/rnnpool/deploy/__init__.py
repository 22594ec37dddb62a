"""Microcontroller deployment: arena planning, C code generation, Cortex-M4 emulation, ONNX.

Submodules are imported on demand (``rnnpool.deploy.planner``, ``.codegen``, ``.mcu``,
``.onnx_export``) so that importing this package stays cheap.
"""

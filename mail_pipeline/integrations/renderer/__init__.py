"""Renderers for proofs: the rendering gateway, legacy Pixelixe and the local backup generator.

Import the pieces from their modules: :mod:`.models` (requests and results), :mod:`.chain`
(the :class:`~.chain.Renderer` interface and the configured fallback order), :mod:`.backup`,
:mod:`.gateway`, :mod:`.pixelixe`, and :mod:`.sandbox` (local stand-ins for the remote two).
"""

"""The command line's file verbs (info, verify, export, preview, pack, unpack, merge, import-itgan) and the checks
every output path passes before any work; ``latentds.cli`` registers them through :func:`commands.register`."""

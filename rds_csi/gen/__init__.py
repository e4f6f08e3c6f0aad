"""Generated CSI v1 code (betterproto2) - do not edit; `make proto` regenerates it."""

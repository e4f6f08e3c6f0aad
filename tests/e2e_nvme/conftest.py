"""Nothing here is a pytest test: the e2e-nvme run is its own command (tests.e2e_nvme.run).

guest_test.py matches pytest's default `*_test.py` pattern but only works inside the QEMU guest.
"""

collect_ignore_glob = ["*.py"]

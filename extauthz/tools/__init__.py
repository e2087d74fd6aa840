"""What users run against a gateway, not in it: a CI job's exchange (`keymint exchange`), an
engineer's login (`keymint login`), offline verification (`keymint verify`, `pin-keys`), and the
operator's checks (`keymint audit reconcile`, `keymint policy test`)."""

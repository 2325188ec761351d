# Sourced by install-deps.sh and test.sh: which Python runs the tests.
#
# The system's python3 where pip may install into it (a pyenv or a distribution that
# allows it); otherwise, as with Debian 12's python3 ("externally managed", PEP 668), a
# venv under ~/.cache/strata/venv (STRATA_VENV overrides). install-deps.sh creates the
# venv and installs tests/requirements.txt into whichever this names.

# True when python3 takes no `pip install` outside a venv: it is marked externally
# managed, or it has no pip at all.
test_python_is_external() {
  python3 -m pip --version >/dev/null 2>&1 || return 0
  python3 - <<'PY' 2>/dev/null
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if os.path.exists(marker) and not in_venv else 1)
PY
}

# The interpreter's path (the venv's may not exist yet).
test_python() {
  if test_python_is_external; then
    echo "${STRATA_VENV:-$HOME/.cache/strata/venv}/bin/python"
  else
    command -v python3
  fi
}

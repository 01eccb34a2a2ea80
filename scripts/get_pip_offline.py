"""Stand-in for the pip bootstrap script that ansible-test downloads for its --venv mode.

ansible-test fetches get-pip.py from a host this machine cannot reach; it looks in its cache
first, so scripts/ansible-test.sh places this file there. Like get-pip.py, it installs pip
into the running (empty) virtual environment and then installs the packages it is given;
pip comes from Python's own ensurepip and the packages from the package index.
"""

import subprocess
import sys

# get-pip.py's own switches; pip install does not know them.
OWN_OPTIONS = {"--no-setuptools", "--no-wheel"}

# In a child process: ensurepip points PIP_CONFIG_FILE at /dev/null in its own environment,
# which would hide the machine's pip configuration (its CA bundle) from the install below.
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
args = [arg for arg in sys.argv[1:] if arg not in OWN_OPTIONS]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))

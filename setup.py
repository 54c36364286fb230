"""Packaging for sgcache: the package, the twistd plugins, the admin command."""

import re

from setuptools import find_packages, setup

with open("sgcache/__init__.py") as fh:
    VERSION = re.search(r'__version__ = "([^"]+)"', fh.read()).group(1)

setup(
    name="sgcache",
    version=VERSION,
    description="A site-local caching proxy for the Shotgun (Flow Production Tracking) API",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # schema/ ships inside the package as sgcache.schemas (the demo's schema)
    packages=find_packages(include=["sgcache", "sgcache.*"]) + ["sgcache.schemas", "twisted.plugins"],
    package_dir={"sgcache.schemas": "schema"},
    package_data={"sgcache.schemas": ["*.yml", "*.rules"], "twisted.plugins": ["*.py"]},
    install_requires=[
        # [tls]: the ssl: listen endpoint (README, production setup)
        "twisted[tls]>=25.5",
        "klein>=23.5",
        "treq>=23.11",
        "txpostgres>=1.7",
        # txpostgres declares no driver of its own.
        "psycopg2-binary>=2.9",
        "shotgun_api3>=3.4",
        "pyyaml>=6",
        # /metrics on the admin listener: the exposition formats (text and
        # OpenMetrics, content negotiation) and the process collectors are
        # its job, and what Prometheus expects
        "prometheus_client>=0.17",
        # imported directly (both come with Twisted)
        "zope.interface>=5",
        "hyperlink>=21",
        # certificates for tests' TLS sites (sgcache.testing.certs); comes
        # with twisted[tls] through pyOpenSSL
        "cryptography>=41",
    ],
    # cryptography: the TLS test makes its certificate (it comes with twisted[tls])
    extras_require={"test": ["hypothesis>=6", "cryptography>=41"]},
    entry_points={"console_scripts": ["sgcache = sgcache.admin.cli:main"]},
)

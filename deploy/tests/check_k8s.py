"""Validate Kubernetes manifest files: official schemas (strict) + the security baseline.

Usage: python check_k8s.py FILE...   (exit 1 on any problem, warnings included)
"""

import sys

import kube


def main(paths):
    failed = False
    for path in paths:
        with open(path, encoding="utf-8") as f:
            resources = kube.load_all(f.read())
        if not resources:
            print(f"ERROR {path}: no resource")
            failed = True
        for r in resources:
            for p in kube.validate(r) + kube.security_problems(r):
                print(f"ERROR {path}: {p}")
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Checks over the deploy files as text.

Usage: python check_files.py   (from the repository root; exit 1 on any problem)

- No AWS region literal anywhere in deploy/, the root Dockerfile or .checkov.yaml: the
  platform sets the region (the IRSA webhook on EKS, ECS itself), CloudFormation uses
  AWS::Region, and the ECS task definitions a ${AWS_REGION} placeholder. A region written
  into a manifest is wrong for every buyer elsewhere (RegisterUsage fails with exit 13).
- The root Dockerfile copies from the build context only what .dockerignore lets in, and
  ships /LICENSE and /NOTICE.
- Cross-references name real sections: every `FILE, "Title"` citation in deploy/ (comments,
  values, Markdown) and docs/deploy-reference.md names a heading of FILE, and every relative
  Markdown link of deploy/**/*.md and docs/deploy-reference.md reaches an existing file and,
  with #anchor, one of its headings.
- The IAM policies grant exactly what each pricing model calls: iam-policy.json
  aws-marketplace:RegisterUsage (hourly), iam-policy-license-manager.json the three License
  Manager actions (contract; no GetLicense or ListReceivedLicenses: mpgate does not call
  them), and the CloudFormation task role's contract policy is the same document.
"""

import json
import os
import re
import sys

import yaml

REGION = re.compile(
    r"\b(?:us|eu|ap|sa|ca|me|af|il|mx|cn)(?:-gov|-iso|-isob)?"
    r"-(?:north|south|east|west|central|northeast|northwest|southeast|southwest)-[0-9]+\b"
)


def region_problems(paths):
    # The pattern must find what it is for, else this check could never fail (the samples
    # are assembled so that this file holds no literal itself).
    east, central, gov = "-".join(("us", "east", "1")), "-".join(("eu", "central", "2")), "-".join(("us", "gov", "west", "1"))
    assert REGION.search(f"709825985650.dkr.ecr.{east}.amazonaws.com") and REGION.search(central)
    assert REGION.search(gov) and not REGION.search("us-east") and not REGION.search("AWS::Region")
    found = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(lines, 1):
            for m in REGION.finditer(line):
                found.append(f"{path}:{n}: region literal {m.group(0)!r} (let the platform set the region)")
    return found


def files_under(root):
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in ("charts", "__pycache__")]
        for f in files:
            yield os.path.join(d, f)


def dockerignore_problems():
    with open(".dockerignore", encoding="utf-8") as f:
        rules = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    with open("Dockerfile", encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    found = []
    if rules[:1] != ["*"]:
        found.append(".dockerignore should start with * (only what is re-included goes into the context)")
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        if any(w.startswith("--from=") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        for src in args[:-1]:
            src = src.rstrip("/")
            src = src[2:] if src.startswith("./") else src
            if not any(src == inc or src.startswith(inc + "/") for inc in included):
                found.append(f"Dockerfile copies {src}, which .dockerignore keeps out of the build context")
    for shipped in ("LICENSE", "NOTICE"):
        if not re.search(rf"^COPY deploy/{shipped} /{shipped}$", text, re.M):
            found.append(f"Dockerfile does not ship /{shipped} (COPY deploy/{shipped} /{shipped})")
        if not os.path.getsize(f"deploy/{shipped}"):
            found.append(f"deploy/{shipped} is empty")
    return found


POLICIES = {
    "deploy/iam-policy.json": {"aws-marketplace:RegisterUsage"},
    "deploy/iam-policy-license-manager.json": {
        "license-manager:CheckoutLicense", "license-manager:CheckInLicense", "license-manager:ExtendLicenseConsumption"},
}


def actions_of(document):
    found = set()
    for st in document.get("Statement") or []:
        if st.get("Effect") != "Allow":
            continue
        acts = st.get("Action")
        found |= {acts} if isinstance(acts, str) else set(acts or [])
    return found


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!If, !Ref, !Sub...) kept as {tag: value}."""


def _tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


CfnLoader.add_multi_constructor("!", _tagged)


def policy_problems():
    found = []
    docs = {}
    for path, want in POLICIES.items():
        try:
            with open(path, encoding="utf-8") as f:
                docs[path] = json.load(f)
        except (OSError, ValueError) as e:
            found.append(f"{path}: {e}")
            continue
        got = actions_of(docs[path])
        if got != want:
            found.append(f"{path} should allow exactly {sorted(want)}, allows {sorted(got)}")
    with open("deploy/ecs/cloudformation.yaml", encoding="utf-8") as f:
        template = yaml.load(f, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    props = template["Resources"]["TaskRole"]["Properties"]
    branches = (props.get("Policies") or {}).get("If") or []
    inline = [p["PolicyDocument"] for p in (branches[1] if len(branches) == 3 and isinstance(branches[1], list) else [])]
    lm = "deploy/iam-policy-license-manager.json"
    if branches[:1] != ["IsContract"] or len(inline) != 1:
        found.append("cloudformation.yaml: TaskRole.Policies should be !If [IsContract, [the License Manager policy], NoValue]")
    elif lm in docs and inline[0].get("Statement") != docs[lm].get("Statement"):
        found.append(f"cloudformation.yaml: the TaskRole's contract policy differs from {lm}")
    managed = (props.get("ManagedPolicyArns") or {}).get("If") or []
    if managed[:1] != ["IsContract"] or "AWSMarketplaceMeteringRegisterUsage" not in json.dumps(managed[2:]):
        found.append("cloudformation.yaml: TaskRole.ManagedPolicyArns should be !If [IsContract, NoValue, [AWSMarketplaceMeteringRegisterUsage]]")
    return found


CITATION = re.compile(r"((?:deploy/|docs/)?(?:README|deploy-reference|reference)\.md)[,:]?\s+\"([^\"]+)\"")
MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def headings(path):
    """{title: anchor} of a Markdown file's headings (outside code fences), GitHub's slugs."""
    found, seen, fenced = {}, {}, False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.lstrip().startswith(("```", "~~~")):
                fenced = not fenced
            if fenced or not line.startswith("#"):
                continue
            title = line.lstrip("#").strip()
            slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found[title] = slug if n == 0 else f"{slug}-{n}"
    return found


def crossref_problems(paths):
    found = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            continue
        # A citation may wrap over a comment line: join the lines first.
        flat = re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)
        for m in CITATION.finditer(flat):
            target, title = m.group(1), m.group(2)
            if "/" not in target:
                target = "README.md" if target == "README.md" else os.path.join("docs", target)
            if not os.path.exists(target):
                continue
            if title not in headings(target):
                found.append(f"{path}: cites {target}, \"{title}\", which is not a heading there")
        if not path.endswith(".md"):
            continue
        for m in MD_LINK.finditer(text):
            link = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", link):
                continue
            file_part, _, anchor = link.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(dest):
                found.append(f"{path}: link {link}: no such file")
            elif anchor and dest.endswith(".md") and anchor not in headings(dest).values():
                found.append(f"{path}: link {link}: no heading #{anchor} in {dest}")
    return found


def main():
    failed = False
    paths = sorted(files_under("deploy")) + ["Dockerfile", ".checkov.yaml"]
    docs = [p for p in paths if p.startswith("deploy/")] + ["docs/deploy-reference.md"]
    checks = [
        (f"cross-references: every cited section title and Markdown link of deploy/ and docs/deploy-reference.md exists ({len(docs)} files)",
         crossref_problems(docs)),
        (f"no region literal in deploy/, Dockerfile, .checkov.yaml ({len(paths)} files)", region_problems(paths)),
        (".dockerignore lets in what the Dockerfile copies; the image ships LICENSE and NOTICE", dockerignore_problems()),
        ("IAM: hourly RegisterUsage only, contract the three License Manager actions only; the CloudFormation task role gets the pricing's policy",
         policy_problems()),
    ]
    for name, problems in checks:
        print(f"{'ok  ' if not problems else 'FAIL'} {name}")
        for p in problems:
            print(f"       {p}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

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
  them), iam-policy-meter-usage.json aws-marketplace:MeterUsage (usage), and the
  CloudFormation task role's contract and usage policies are the same documents.
- Secure by default: the seller image's default target (its last stage) is `pinned`, which
  sets no product code or key, builds only after the pin check (an unpinned mpgate stops
  the build) and names no other stage; the unpinned `keyring` target says UNPINNED and "for
  CI and testing" where it is defined. CloudFormation's KeySource defaults to pinned, its
  description calls the other sources unpinned, for CI and testing, and a rule refuses
  OnTransientError allow with a pinned build (which exits 2 on it).
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
    "deploy/iam-policy-meter-usage.json": {"aws-marketplace:MeterUsage"},
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

    def inline_of(branches, condition, path, model):
        docs_in = [p["PolicyDocument"] for p in (branches[1] if len(branches) == 3 and isinstance(branches[1], list) else [])]
        if branches[:1] != [condition] or len(docs_in) != 1:
            found.append(f"cloudformation.yaml: TaskRole.Policies should hold !If [{condition}, [the {model} policy], ...]")
        elif path in docs and docs_in[0].get("Statement") != docs[path].get("Statement"):
            found.append(f"cloudformation.yaml: the TaskRole's {model} policy differs from {path}")
        return branches[2] if len(branches) == 3 else None

    rest = inline_of((props.get("Policies") or {}).get("If") or [], "IsContract", "deploy/iam-policy-license-manager.json", "contract")
    rest = inline_of((rest or {}).get("If") or [], "IsUsage", "deploy/iam-policy-meter-usage.json", "usage")
    if rest != {"Ref": "AWS::NoValue"}:
        found.append(f"cloudformation.yaml: TaskRole.Policies: hourly pricing gets no inline policy, gets {rest}")
    managed = (props.get("ManagedPolicyArns") or {}).get("If") or []
    if managed[:1] != ["IsHourly"] or "AWSMarketplaceMeteringRegisterUsage" not in json.dumps(managed[1:2]) or managed[2:] != [{"Ref": "AWS::NoValue"}]:
        found.append("cloudformation.yaml: TaskRole.ManagedPolicyArns should be !If [IsHourly, [AWSMarketplaceMeteringRegisterUsage], NoValue]")
    return found


SELLER_DOCKERFILE = "deploy/examples/seller-image/Dockerfile"


def stages(text):
    """{stage name: (FROM line, body lines)} of a Dockerfile, in order; continuation lines
    joined."""
    out = {}
    name = None
    for line in text.replace("\\\n", " ").splitlines():
        m = re.match(r"^FROM\s+(.*?)(?:\s+AS\s+(\S+))?\s*$", line, re.I)
        if m:
            name = m.group(2) or f"stage{len(out)}"
            out[name] = (line, [])
        elif name is not None:
            out[name][1].append(line)
    return out


def secure_default_problems():
    found = []
    with open(SELLER_DOCKERFILE, encoding="utf-8") as f:
        text = f.read()
    st = stages(text)
    names = list(st)
    if not names or names[-1] != "pinned":
        found.append(f"{SELLER_DOCKERFILE}: the last stage (the default target) should be pinned, is {names[-1:]}")
    else:
        body = [l for l in st["pinned"][1] if l.strip() and not l.lstrip().startswith("#")]
        if any(re.search(r"MPGATE_(PRODUCT_CODE|PUBLIC_KEY)", l) for l in body):
            found.append(f"{SELLER_DOCKERFILE}: the pinned target must set no product code or key (a pinned build refuses them)")
        if not any(re.match(r"^COPY --from=pin-check\s", l) for l in body):
            found.append(f"{SELLER_DOCKERFILE}: the pinned target must depend on the pin-check stage (COPY --from=pin-check), else BuildKit skips the check")
        if not st["pinned"][0].split()[1] == "base":
            found.append(f"{SELLER_DOCKERFILE}: the pinned target should build FROM base")
    check = " ".join(st.get("pin-check", ("", []))[1])
    if "--version" not in check or "pinned product code: " not in check or "exit 1" not in check:
        found.append(f"{SELLER_DOCKERFILE}: the pin-check stage must run `mpgate --version` and exit 1 without 'pinned product code: '")
    if "$BUILDPLATFORM" not in st.get("pin-check", ("", []))[0]:
        found.append(f"{SELLER_DOCKERFILE}: the pin-check stage should run on $BUILDPLATFORM (no QEMU)")
    lines = text.splitlines()
    for target in ("keyring",):
        i = next((n for n, l in enumerate(lines) if re.match(rf"^FROM\s+\S+\s+AS\s+{target}\s*$", l, re.I)), None)
        comment = []
        while i is not None and i > 0 and lines[i - 1].startswith("#"):
            i -= 1
            comment.insert(0, lines[i])
        said = " ".join(comment)
        if "UNPINNED" not in said or "for CI and testing" not in said:
            found.append(f"{SELLER_DOCKERFILE}: the {target} target's comment must say UNPINNED and 'for CI and testing'")
    with open("deploy/ecs/cloudformation.yaml", encoding="utf-8") as f:
        template = yaml.load(f, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    ks = template["Parameters"]["KeySource"]
    if ks.get("Default") != "pinned":
        found.append(f"cloudformation.yaml: KeySource should default to pinned, is {ks.get('Default')!r}")
    if "UNPINNED, for CI and testing" not in " ".join(ks.get("Description", "").split()):
        found.append("cloudformation.yaml: KeySource's description must call image and inline UNPINNED, for CI and testing")
    rule = template.get("Rules", {}).get("PinnedRefusesAllow", {})
    if "OnTransientError" not in json.dumps(rule) or "deny" not in json.dumps(rule):
        found.append("cloudformation.yaml: a rule PinnedRefusesAllow must keep OnTransientError deny with KeySource pinned")
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
        ("secure by default: the seller image's default target is pinned (checked at build), keyring says UNPINNED for CI and testing; "
         "CloudFormation KeySource defaults to pinned and refuses allow with it", secure_default_problems()),
        ("IAM: hourly RegisterUsage only, contract the three License Manager actions only, usage MeterUsage only; the CloudFormation task role gets the pricing's policy",
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

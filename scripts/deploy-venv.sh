# Sourced by scripts/validate-deploy.sh and scripts/render-chart.sh (not run by itself):
# the pinned offline tools live in virtualenvs under target/, made once and again only when
# their requirements file changes.

# deploy_venv DIR REQUIREMENTS: (re)creates DIR from the pinned REQUIREMENTS when they
# changed. Progress goes to stderr (stdout may be a rendered chart).
deploy_venv() {
    local dir=$1 req=$2 want
    want=$(sha256sum "$req" | cut -d' ' -f1)
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    echo "setting up $dir from $req (first run: about a minute)" >&2
    mkdir -p "$(dirname "$dir")"
    rm -rf "$dir"
    python3 -m venv "$dir" >&2 \
        && "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2 \
        && echo "$want" > "$dir/.requirements.sha256"
}

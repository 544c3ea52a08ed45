# Shared by scripts/demo and scripts/test: a pinned uv in .tools/ and the machine's Python 3.11.
UV_VERSION=0.13.9
# uv must use the machine's CPython 3.11 (.python-version); managed Python downloads need the internet.
export UV_PYTHON_DOWNLOADS=never
export UV_LINK_MODE=${UV_LINK_MODE:-copy}

ensure_uv() {
    if command -v uv >/dev/null 2>&1 && [[ "$(uv --version | cut -d' ' -f2)" == "$UV_VERSION" ]]; then
        UV=uv
        return
    fi
    if [[ ! -x .tools/bin/uv ]] || [[ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
        echo "installing uv $UV_VERSION into .tools/" >&2
        python3 -m venv .tools
        .tools/bin/pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    fi
    UV=.tools/bin/uv
}

# Installs Debian packages that are missing (needs root or sudo).
ensure_debian_packages() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    echo "installing Debian packages: ${missing[*]}" >&2
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

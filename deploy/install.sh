#!/usr/bin/env bash
# Install insarwatch on an observatory server: the `insarwatch` system user, its
# directories, a virtual environment in /opt/insarwatch/venv, the configuration and the
# systemd units. Idempotent: each step looks at what is there and only does what is
# missing, so running it again upgrades the package and units and keeps the site's
# configuration. --dry-run prints every change it would make and makes none.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/install.sh [options]

  --dry-run          print what would be done; change nothing
  --drop-dir DIR     the LiCSAR drop directory, read only to the service (default /srv/licsar)
  --torch "ARGS"     pip arguments that install torch, first, when the virtual environment is
                     created (default "torch>=2.4,<2.15": the CUDA build on Linux x86_64;
                     to switch builds later, remove /opt/insarwatch/venv). A CPU-only server:
                     --torch "torch --index-url https://download.pytorch.org/whl/cpu"
  --source PATH      what pip installs as insarwatch: a checkout or a wheel (default: this checkout)
  --python PATH      the interpreter for the virtual environment (default python3, >= 3.11)
  --skip-venv        leave /opt/insarwatch/venv alone (managed by other means)
  --no-enable        install the units without enabling them
  --root DIR         install into DIR as if it were / (an image being built); default /
  -h, --help         this text

Examples:
  sudo deploy/install.sh --dry-run
  sudo deploy/install.sh --drop-dir /data/licsar
  sudo deploy/install.sh --torch "torch --index-url https://download.pytorch.org/whl/cpu"
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(dirname "$here")
dry_run=0 enable=1 venv_step=1
root=/ drop_dir=/srv/licsar default_drop_dir=/srv/licsar
torch_args="torch>=2.4,<2.15" source=$checkout python=python3
user=insarwatch

while (($#)); do
    case $1 in
        --dry-run) dry_run=1 ;;
        --drop-dir) drop_dir=${2:?--drop-dir needs a directory}; shift ;;
        --torch) torch_args=${2:?--torch needs pip arguments}; shift ;;
        --source) source=${2:?--source needs a path}; shift ;;
        --python) python=${2:?--python needs an interpreter}; shift ;;
        --skip-venv) venv_step=0 ;;
        --no-enable) enable=0 ;;
        --root) root=${2:?--root needs a directory}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

die() { echo "install.sh: $1" >&2; exit "${2:-1}"; }
[[ $drop_dir == /* && $drop_dir != *[\|\"\\]* ]] || die "--drop-dir must be an absolute path without | \" or \\: $drop_dir" 2
[[ $root == /* ]] || die "--root must be an absolute path: $root" 2
[[ -e $source ]] || die "--source does not exist: $source" 2
((dry_run)) || [[ $(id -u) == 0 ]] || die "run as root (or with --dry-run to see what it would do)"

# Paths as the installed system sees them; $root + path is where they are written.
var_dir=/var/lib/insarwatch cache_dir=/var/cache/insarwatch etc_dir=/etc/insarwatch
opt_dir=/opt/insarwatch venv=/opt/insarwatch/venv units_dir=/etc/systemd/system
at() { printf '%s%s' "${root%/}" "$1"; }

changes=0
# act [--as DESCRIPTION] COMMAND...: make a change, or in a dry run only say what it would be.
act() {
    local description
    if [[ $1 == --as ]]; then description=$2; shift 2; else description=$(printf '%q ' "$@"); fi
    changes=$((changes + 1))
    if ((dry_run)); then
        printf 'would: %s\n' "$description"
    else
        printf 'doing: %s\n' "$description"
        "$@"
    fi
}
ok() { printf 'ok:    %s\n' "$*"; }

# Numeric ids from the target's own user database: under --root the host's may differ.
id_of() {
    [[ $2 == root ]] && { echo 0; return; }
    awk -F: -v name="$2" '$1 == name { print $3 }' "$(at "/etc/$1")" 2>/dev/null || true
}

ensure_user() {
    if [[ -n $(id_of passwd "$user") ]]; then
        ok "user $user exists"
        return
    fi
    local args=(--system --user-group --home-dir "$var_dir" --no-create-home
                --shell /usr/sbin/nologin --comment "insarwatch daemon")
    [[ $root == / ]] || args+=(--root "$root")
    act useradd "${args[@]}" "$user"
}

# ensure_dir PATH OWNER GROUP MODE: create it, or correct its owner and mode.
ensure_dir() {
    local path=$1 owner=$2 group=$3 mode=$4 target uid gid
    target=$(at "$path")
    uid=$(id_of passwd "$owner") gid=$(id_of group "$group")
    # Names stand in for ids only in a dry run, before the user exists.
    local ids="${uid:-$owner}:${gid:-$group}"
    if [[ ! -d $target ]]; then
        act install -d -m "$mode" -o "${ids%:*}" -g "${ids#*:}" "$target"
        return
    fi
    local current
    current=$(stat -c %u:%g:%a "$target")
    if [[ ${current%:*} != "$uid:$gid" ]]; then
        act chown "$ids" "$target"
    fi
    if [[ ${current##*:} != "${mode#0}" ]]; then
        act chmod "$mode" "$target"
    fi
    [[ $current != "$uid:$gid:${mode#0}" ]] || ok "$path ($owner:$group $mode)"
}

# write_text PATH MODE POLICY TEXT: write when missing or different; POLICY "keep" never
# overwrites an existing file (the site's configuration).
write_text() {
    local path=$1 mode=$2 policy=$3 text=$4 target
    target=$(at "$path")
    if [[ -e $target && $policy == keep ]]; then
        ok "$path exists (kept as the site has it)"
    elif [[ -e $target ]] && cmp -s <(printf '%s' "$text") "$target"; then
        ok "$path is up to date"
    else
        act --as "write $target (mode $mode)" put "$text" "$target" "$mode"
    fi
}
put() { install -d -m 0755 "$(dirname "$2")" && printf '%s' "$1" > "$2" && chmod "$3" "$2"; }
# install_file SOURCE PATH MODE [keep]
install_file() {
    local text
    text=$(cat "$1"; echo .)  # the dot carries trailing newlines through $(...)
    write_text "$2" "$3" "${4:-replace}" "${text%.}"
}

echo "insarwatch install into ${root} (drop directory $drop_dir)$( ((dry_run)) && echo ', dry run')"

ensure_user
ensure_dir "$var_dir" "$user" "$user" 0750
ensure_dir "$var_dir/models" "$user" "$user" 0750
ensure_dir "$cache_dir" "$user" "$user" 0750
ensure_dir "$etc_dir" root root 0755
ensure_dir "$opt_dir" root root 0755
# The service only ever reads the drop directory; whatever fills it owns it.
if [[ -d $(at "$drop_dir") ]]; then
    ok "$drop_dir exists (left as it is)"
else
    act install -d -m 0755 "$(at "$drop_dir")"
fi

# Configuration: installed once, then it is the site's.
if [[ $drop_dir == "$default_drop_dir" ]]; then
    config=$(cat "$here/insarwatch.toml"; echo .)
else
    config=$(sed "s|^#drop_dir = .*|drop_dir = \"$drop_dir\"|" "$here/insarwatch.toml"; echo .)
fi
write_text "$etc_dir/insarwatch.toml" 0644 keep "${config%.}"
write_text "$etc_dir/train.env" 0644 keep "# What insarwatch-train.service trains from (see that unit).
TRAIN_DATA=$var_dir/dataset
TRAIN_MODEL=--base $var_dir/base-model
"

if ((venv_step)); then
    if [[ -x $(at "$venv/bin/python") ]]; then
        ok "$venv exists"
    else
        "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || die "$python is older than Python 3.11 (use --python)"
        act "$python" -m venv "$(at "$venv")"
        act "$(at "$venv/bin/python")" -m pip install --quiet --upgrade pip
        # torch first, from the arguments given: pip would otherwise pick a build for us.
        # shellcheck disable=SC2086  # the pip arguments are split on purpose
        act "$(at "$venv/bin/python")" -m pip install --quiet $torch_args
    fi
    act "$(at "$venv/bin/python")" -m pip install --quiet --upgrade "$source"
    install_file "$checkout/README.md" "$opt_dir/share/README.md" 0644
else
    ok "virtual environment left alone (--skip-venv)"
fi

for unit in insarwatch.service insarwatch-train.service insarwatch-train.timer; do
    install_file "$checkout/systemd/$unit" "$units_dir/$unit" 0644
done
dropin="$units_dir/insarwatch.service.d/drop-dir.conf"
if [[ $drop_dir != "$default_drop_dir" ]]; then
    write_text "$dropin" 0644 replace "# Written by deploy/install.sh --drop-dir: where this site's interferograms arrive.
[Unit]
RequiresMountsFor=$drop_dir

[Service]
ReadOnlyPaths=
ReadOnlyPaths=$drop_dir
"
elif [[ -e $(at "$dropin") ]]; then
    act rm "$(at "$dropin")"
fi

systemctl_root=()
[[ $root == / ]] || systemctl_root=(--root "$root")
if [[ $root == / && -d /run/systemd/system ]]; then
    act systemctl daemon-reload
fi
if ((enable)); then
    for unit in insarwatch.service insarwatch-train.timer; do
        if [[ $(systemctl "${systemctl_root[@]}" is-enabled "$unit" 2>/dev/null) == enabled ]]; then
            ok "$unit enabled"
        else
            act systemctl "${systemctl_root[@]}" enable "$unit"
        fi
    done
fi

if ((dry_run)); then
    echo "dry run: $changes change(s) would be made; nothing was changed"
else
    echo "done: $changes change(s)"
    cat <<EOF
Next: put a model in $var_dir/models (insarwatch train ... or copy one, then point
models/current at it), edit $etc_dir/insarwatch.toml (e-mail, webhook, volcanoes),
then: systemctl start insarwatch && insarwatch status
EOF
fi

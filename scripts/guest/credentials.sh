# shellcheck shell=bash
# Phase: credentials. The proxy's and the package mirrors' passwords, which arrive on stdin
# (gpu-stack:proxyPassword, then gpu-stack:repositoryPassword, one line each, those whose user
# is set), written only to root-only files (mode 0600), never to the script, its output or a
# world-readable file. Every later phase reads them from there (lib.sh proxy_for, repo_fetch,
# repo_auth); os-prep removes them once the config drops the user.
# - /etc/gpu-stack/proxy.env: HTTP_PROXY= and HTTPS_PROXY= with user:password@ (percent-encoded),
#   for curl (lib.sh) and for containerd/docker (EnvironmentFile= of their proxy drop-in).
# - /etc/gpu-stack/netrc: `machine HOST login USER password PASSWORD` per mirror host, for curl
#   --netrc-file (repository keys, index checks, runfiles) and for dnf's .repo lines (lib.sh repo_auth).
# - Ubuntu: /etc/apt/auth.conf.d/gpu-stack.conf, apt_auth.conf(5) ("Login configuration file for APT
#   sources and proxies": login information "can hence not be placed in a file with world-readable file
#   permissions"; `machine [protocol://]hostname[:port][/path]`, `login`, `password`): one line for the
#   proxy (apt's Acquire::http(s)::Proxy stays without credentials, os-prep) and one per mirror.
# - EL: dnf.conf(5) [main] proxy_username= and proxy_password= in /etc/dnf/dnf.conf, then mode 0600;
#   the mirrors' username= and password= go into their .repo files ([repo] options), also 0600.
family=$(os_id)
proxy_password=""
repo_password=""
if [ -n "$GS_PROXY_USER" ]; then
  IFS= read -r proxy_password || true
  [ -n "$proxy_password" ] || die "guest.proxy.username is set but no proxy password arrived on stdin (gpu-stack:proxyPassword)"
  case "$proxy_password" in
    *[[:space:]\"\'\\]*) die "gpu-stack:proxyPassword holds white space, a quote or a backslash, which apt's auth.conf cannot carry; choose a password without them" ;;
  esac
fi
if [ -n "$GS_REPO_USER" ]; then
  IFS= read -r repo_password || true
  [ -n "$repo_password" ] || die "guest.repositoryUsername is set but no password arrived on stdin (gpu-stack:repositoryPassword)"
  # netrc and apt's auth.conf separate tokens by white space and give quotes a meaning
  case "$repo_password" in
    *[[:space:]\"\'\\]*) die "gpu-stack:repositoryPassword holds white space, a quote or a backslash, which apt's auth.conf and netrc cannot carry; choose a password without them" ;;
  esac
fi

# url_encode STRING: RFC 3986 percent-encoding of everything but the unreserved characters.
url_encode() {
  local LC_ALL=C s="$1" i c
  for ((i = 0; i < ${#s}; i++)); do
    c="${s:i:1}"
    case "$c" in
      [A-Za-z0-9.~_-]) printf '%s' "$c" ;;
      *) printf '%%%02X' "'$c" ;;
    esac
  done
}

# with_credentials URL: URL with user:password@ after its scheme.
with_credentials() {
  [ -n "$1" ] || return 0
  printf '%s://%s:%s@%s' "${1%%://*}" "$(url_encode "$GS_PROXY_USER")" "$(url_encode "$proxy_password")" "${1#*://}"
}

# host_port URL: host[:port] of URL; host_of URL: the host alone.
host_port() { local rest="${1#*://}"; printf '%s' "${rest%%/*}"; }
host_of() { local hp; hp=$(host_port "$1"); printf '%s' "${hp%:*}"; }

mkdir -p "$GS_ROOT/etc/gpu-stack"
chmod 0700 "$GS_ROOT/etc/gpu-stack"
apt_lines=()
if [ -n "$GS_PROXY_USER" ]; then
  http="${GS_HTTP_PROXY:-$GS_HTTPS_PROXY}"
  https="${GS_HTTPS_PROXY:-$GS_HTTP_PROXY}"
  if printf 'HTTP_PROXY=%s\nHTTPS_PROXY=%s\n' "$(with_credentials "$http")" "$(with_credentials "$https")" \
      | write_file /etc/gpu-stack/proxy.env 0600; then
    # a running runtime keeps the old credentials until it restarts (its drop-in reads this file). containerd's
    # containers outlive its restart (their shims do); dockerd's do not, unless live-restore is on, and this
    # phase runs on every VM at once, outside the drained waves: docker is restarted only with nothing running
    if systemctl is-active --quiet containerd 2>/dev/null; then systemctl restart containerd; changed "containerd restarted for the proxy credentials"; fi
    if systemctl is-active --quiet docker 2>/dev/null; then
      if [ -z "$(docker ps -q 2>/dev/null)" ]; then
        systemctl restart docker; changed "docker restarted for the proxy credentials"
      else
        log "docker keeps the old proxy credentials until its next restart (the next upgrade-runtime wave or a reboot): restarting it now would stop its running containers"
      fi
    fi
  fi
  # apt_auth.conf(5): "If protocol is not specified, the entry only matches https and tor+https" (apt 2.6.1),
  # and apt looks proxy credentials up by the proxy URL, so the line names its scheme (http://proxy:3128)
  for url in $http $https; do
    apt_lines+=("machine ${url%%://*}://$(host_port "$url") login ${GS_PROXY_USER} password ${proxy_password}")
  done
  if [ "$family" = rhel ]; then
    conf="$GS_ROOT/etc/dnf/dnf.conf"
    if [ "$(sed -n 's/^proxy_username=//p' "$conf")" != "$GS_PROXY_USER" ] || [ "$(sed -n 's/^proxy_password=//p' "$conf")" != "$proxy_password" ]; then
      chmod 0600 "$conf"
      sed -i -e '/^proxy_username=/d' -e '/^proxy_password=/d' "$conf"
      printf 'proxy_username=%s\nproxy_password=%s\n' "$GS_PROXY_USER" "$proxy_password" >>"$conf"
      changed "dnf proxy credentials for ${GS_PROXY_USER}"
    fi
    [ "$(stat -c %a "$conf")" = 600 ] || { chmod 0600 "$conf"; changed "/etc/dnf/dnf.conf mode 0600"; }
  fi
fi
if [ -n "$GS_REPO_USER" ]; then
  for url in $GS_REPO_HOSTS; do
    printf 'machine %s login %s password %s\n' "$(host_of "$url")" "$GS_REPO_USER" "$repo_password"
  done | sort -u | write_file /etc/gpu-stack/netrc 0600 || true
  for url in $GS_REPO_HOSTS; do
    apt_lines+=("machine ${url} login ${GS_REPO_USER} password ${repo_password}")
  done
fi
if [ "$family" = ubuntu ] && [ "${#apt_lines[@]}" -gt 0 ]; then
  printf '%s\n' "${apt_lines[@]}" | awk '!seen[$0]++' | write_file /etc/apt/auth.conf.d/gpu-stack.conf 0600 || true
fi
log "done (changed=${GS_CHANGED})"

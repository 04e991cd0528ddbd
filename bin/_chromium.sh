# Sourced by bin/test: the browser tests drive Debian's Chromium (Playwright's own browser
# download cannot work here). Installed from Debian when missing and we may use apt-get.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian's chromium for the browser tests"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "bin/test: the browser tests need Chromium: run 'sudo apt-get install chromium' (Debian) first" >&2
  fi
fi

#!/usr/bin/env bash
# Debian packages that carry the benchmark's real text (see src/taskfuse/eval/tasks/) and the browser that the
# report test opens. Package descriptions come from apt's English translation index, which this image's apt
# configuration does not fetch by default (Acquire::Languages "none"), hence the explicit option.
set -euo pipefail
PACKAGES="wordnet-base fortunes fortunes-min fortunes-de fortunes-es fortunes-it fortunes-ru manpages manpages-dev chromium"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
translations=$(ls /var/lib/apt/lists/*_debian_dists_*_main_i18n_Translation-en* 2>/dev/null | head -1 || true)
if [ -z "$missing" ] && [ -n "$translations" ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "taskfuse: the benchmark needs Debian packages:$missing and apt's Translation-en index;" \
         "run scripts/install_task_data.sh as root" >&2
    exit 1
fi
for attempt in 1 2 3; do
    if apt-get update -qq -o Acquire::Languages=en \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
        exit 0
    fi
    echo "taskfuse: apt attempt $attempt failed, retrying" >&2
    sleep 5
done
exit 1

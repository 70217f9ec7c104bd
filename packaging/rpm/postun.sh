# portguard %postun. Erase ($1 = 0): the daemon's state and the last good policy go (prerm
# removed what they describe);
# /etc/portguard stays as rpm leaves edited config files (site.toml.rpmsave). Upgrade ($1 >= 1):
# a running daemon restarts on the new binary and adopts the pinned enforcement without a gap.
set -e
if [ "$1" -eq 0 ]; then
    rm -rf /run/portguard /var/lib/portguard
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart portguard.service >/dev/null 2>&1 || :
    fi
fi
exit 0

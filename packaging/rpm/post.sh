# portguard %post. Installing never starts enforcing: the admin writes
# /etc/portguard/site.toml and runs `systemctl enable --now portguard`.
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0

# portguard %preun. On erase ($1 = 0; not on upgrade): stop the service, then remove the
# enforcement itself, so no XDP program or pin outlives the package.
set -e
if [ "$1" -eq 0 ]; then
    if command -v systemctl >/dev/null 2>&1; then
        if [ -d /run/systemd/system ]; then
            systemctl stop portguard.service >/dev/null 2>&1 || :
        fi
        systemctl disable portguard.service >/dev/null 2>&1 || :
    fi
    if [ -x /usr/bin/portguard ]; then
        # A failure stops the erase: a firewall left in the kernel with no tool to lift it
        # would be worse. Fix the cause (the message says what), then erase again.
        if ! /usr/bin/portguard detach; then
            echo "portguard: detach failed; enforcement may still be in force" >&2
            exit 1
        fi
    fi
fi
exit 0

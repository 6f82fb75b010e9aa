#!/bin/sh
# busybox udhcpc hook for tests: report what the client itself understood, change nothing.
case "$1" in
  bound|renew)
    for v in ip mask router dns domain search mtu staticroutes hostname serverid lease ntpsrv tftp bootfile; do
      eval "echo \"NB $v=\$$v\""
    done ;;
esac
exit 0

# bash completion for sesame(8): the commands and their options, as 'sesame COMMAND -h' lists
# them (internal/cli's TestCompletions keeps the two in step).

_sesame() {
    local cur prev words cword
    _init_completion || return

    local commands="demo doctor grant help keygen knock migrate open revoke server ssh-proxy status version"
    if ((cword == 1)); then
        COMPREPLY=($(compgen -W "$commands -h --help -V --version" -- "$cur"))
        return
    fi

    local opts
    case ${words[1]} in
    server)
        opts="-c --config --knockd-conf --fwknop-conf --firewall --state-dir --control-socket -i --log-format --log-level --check -h"
        case $prev in
        -c | --config | --knockd-conf) _filedir; return ;;
        --fwknop-conf | --state-dir) _filedir -d; return ;;
        --control-socket) _filedir; return ;;
        --firewall) COMPREPLY=($(compgen -W "nftables iptables none" -- "$cur")); return ;;
        -i) _available_interfaces; return ;;
        --log-format) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
        --log-level) COMPREPLY=($(compgen -W "debug info warn error" -- "$cur")); return ;;
        esac
        ;;
    doctor)
        opts="-c --config --knockd-conf --fwknop-conf --firewall -i --timeout --probe-timeout -h"
        case $prev in
        -c | --config | --knockd-conf) _filedir; return ;;
        --fwknop-conf) _filedir -d; return ;;
        --firewall) COMPREPLY=($(compgen -W "nftables iptables none" -- "$cur")); return ;;
        -i) _available_interfaces; return ;;
        --timeout | --probe-timeout) return ;;
        esac
        ;;
    migrate)
        opts="-o --output --keys-dir --firewall --force -h"
        case $prev in
        -o | --output) _filedir; return ;;
        --keys-dir) _filedir -d; return ;;
        --firewall) COMPREPLY=($(compgen -W "nftables iptables none" -- "$cur")); return ;;
        esac
        if ((cword == 2)); then
            COMPREPLY=($(compgen -W "knockd fwknop" -- "$cur"))
            return
        fi
        ;;
    knock)
        opts="-u --udp -d --delay --source-port -4 --ipv4 -6 --ipv6 -v --verbose --door --secret-file --rotate --rotate-ports --rotate-length --rotate-uses --state-file -h --help"
        case $prev in
        -d | --delay | --source-port | --door | --rotate | --rotate-ports | --rotate-length | --rotate-uses) return ;;
        --secret-file | --state-file) _filedir; return ;;
        esac
        ;;
    open)
        opts="-A --access -a --allow-ip -s --source-ip -f --open-for -n --profile --id --key-file --server-key --fwknop --hmac-key-file --hmac-digest-type -m --digest-type -p --port --icmp -P --server-proto -S --source-port -D --destination -4 -6 -v --verbose -T --test --config --rc-file -h --help"
        case $prev in
        --key-file | --server-key | --hmac-key-file | --config | --rc-file) _filedir; return ;;
        --hmac-digest-type | -m | --digest-type)
            COMPREPLY=($(compgen -W "md5 sha1 sha256 sha384 sha512 sha3_256 sha3_512" -- "$cur"))
            return
            ;;
        -D | --destination) _known_hosts_real -- "$cur"; return ;;
        -P | --server-proto) COMPREPLY=($(compgen -W "udp icmp" -- "$cur")); return ;;
        -A | --access | -a | --allow-ip | -f | --open-for | -n | --profile | --id | -p | --port | -S | --source-port) return ;;
        esac
        ;;
    ssh-proxy)
        opts="--knock --knock-delay --wait -A --access -a --allow-ip -s --source-ip -f --open-for -n --profile --id --key-file --server-key --fwknop --hmac-key-file --hmac-digest-type -m --digest-type -p --port -4 -6 -v --verbose --config --rc-file -h --help"
        case $prev in
        --key-file | --server-key | --hmac-key-file | --config | --rc-file) _filedir; return ;;
        --knock | --knock-delay | --wait | -A | --access | -a | --allow-ip | -f | --open-for | -n | --profile | --id | -p | --port) return ;;
        esac
        ;;
    keygen)
        opts="-o --output --pair --server --fwknop --id --force -h"
        case $prev in
        -o | --output) _filedir; return ;;
        --id) return ;;
        esac
        ;;
    demo)
        opts="--open-for --firewall -v -h"
        case $prev in
        --firewall) COMPREPLY=($(compgen -W "nftables iptables" -- "$cur")); return ;;
        --open-for) return ;;
        esac
        ;;
    status)
        opts="--json --socket -h"
        case $prev in
        --socket) _filedir; return ;;
        esac
        ;;
    grant)
        opts="--for --note --socket -h"
        case $prev in
        --socket) _filedir; return ;;
        --for | --note) return ;;
        esac
        ;;
    revoke)
        opts="--all --ban --kill --socket -h"
        case $prev in
        --socket) _filedir; return ;;
        esac
        ;;
    help)
        ((cword == 2)) && COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        return
        ;;
    *)
        return
        ;;
    esac

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ ${words[1]} == knock || ${words[1]} == open || ${words[1]} == ssh-proxy ]]; then
        _known_hosts_real -- "$cur"
    fi
} &&
    complete -F _sesame sesame

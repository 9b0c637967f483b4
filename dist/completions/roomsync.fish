# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_roomsync_global_optspecs
    string join \n sync-now allow-mass-removal availability-only demo config= h/help V/version
end

function __fish_roomsync_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_roomsync_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_roomsync_using_subcommand
    set -l cmd (__fish_roomsync_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c roomsync -n "__fish_roomsync_needs_command" -l config -d 'Configuration file [default: $ROOMSYNC_CONFIG, else /etc/roomsync/roomsync.toml]' -r -F
complete -c roomsync -n "__fish_roomsync_needs_command" -l sync-now -d 'Run one sync now and exit (trigger \'manual\')'
complete -c roomsync -n "__fish_roomsync_needs_command" -l allow-mass-removal -d 'With --sync-now: let this one run remove more rooms than sync.max_removal_ratio allows'
complete -c roomsync -n "__fish_roomsync_needs_command" -l availability-only -d 'With --sync-now: refresh the rooms\' availability only, not the room list (needs availability.enabled)'
complete -c roomsync -n "__fish_roomsync_needs_command" -l demo -d 'Sync a generated organisation from a built-in stand-in DingTalk API into ./roomsync-demo.db; needs no config file and no credentials'
complete -c roomsync -n "__fish_roomsync_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c roomsync -n "__fish_roomsync_needs_command" -s V -l version -d 'Print version'
complete -c roomsync -n "__fish_roomsync_needs_command" -f -a "stand-in" -d 'Serve the stand-in DingTalk API, a generated organisation, until SIGTERM/SIGINT'
complete -c roomsync -n "__fish_roomsync_needs_command" -f -a "status" -d 'Show the latest runs and the age of the last success; exit 0 when it is younger than --max-age, 1 when older or when there is none'
complete -c roomsync -n "__fish_roomsync_using_subcommand stand-in" -l listen -d 'Address and port to listen on' -r
complete -c roomsync -n "__fish_roomsync_using_subcommand stand-in" -l rooms -d 'Rooms in the generated organisation' -r
complete -c roomsync -n "__fish_roomsync_using_subcommand stand-in" -l seed -d 'Seed of the generated organisation: the same seed and size give the same rooms' -r
complete -c roomsync -n "__fish_roomsync_using_subcommand stand-in" -l revision -d 'Serve the organisation as changed this many times (each revision changes 5% of the rooms)' -r
complete -c roomsync -n "__fish_roomsync_using_subcommand stand-in" -l page-latency -d 'Delay added to every page of the room list, e.g. 500ms or 2s: a slow upstream' -r
complete -c roomsync -n "__fish_roomsync_using_subcommand stand-in" -l config -d 'Configuration file [default: $ROOMSYNC_CONFIG, else /etc/roomsync/roomsync.toml]' -r -F
complete -c roomsync -n "__fish_roomsync_using_subcommand stand-in" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c roomsync -n "__fish_roomsync_using_subcommand status" -l max-age -d 'Oldest acceptable last success, e.g. 90m, 2h, 1day' -r
complete -c roomsync -n "__fish_roomsync_using_subcommand status" -l runs -d 'How many of the latest runs to list' -r
complete -c roomsync -n "__fish_roomsync_using_subcommand status" -l availability-max-age -d 'Also exit 1 when the last successful availability refresh is older than this (or there is none); unchecked when absent' -r
complete -c roomsync -n "__fish_roomsync_using_subcommand status" -l config -d 'Configuration file [default: $ROOMSYNC_CONFIG, else /etc/roomsync/roomsync.toml]' -r -F
complete -c roomsync -n "__fish_roomsync_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'

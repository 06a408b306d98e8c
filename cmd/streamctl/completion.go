package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// Shell completion scripts: they ask streamctl itself for the candidates
// (--generate-bash-completion), so they follow its commands and flags.
const (
	bashCompletion = `# streamctl completion for bash: source <(streamctl completion bash)
_streamctl_complete() {
  local cur opts
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == "-"* ]]; then
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  return 0
}
complete -o bashdefault -o default -F _streamctl_complete streamctl
`
	zshCompletion = `#compdef streamctl
# streamctl completion for zsh: streamctl completion zsh > "${fpath[1]}/_streamctl"
_streamctl() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} "$cur" --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _streamctl streamctl
`
)

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "bash:  source <(streamctl completion bash)   (or save it in /etc/bash_completion.d/streamctl)\n" +
			"zsh:   streamctl completion zsh > \"${fpath[1]}/_streamctl\"\n" +
			"fish:  streamctl completion fish > ~/.config/fish/completions/streamctl.fish",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("%s needs one shell: bash, zsh or fish", c.Command.HelpName)
			}
			var script string
			switch shell := c.Args().First(); shell {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("fish completion: %w", err)
				}
				script = s
			default:
				return usagef("%s %q: want bash, zsh or fish", c.Command.HelpName, shell)
			}
			_, err := fmt.Fprint(c.App.Writer, script)
			return err
		},
	}
}

// Command streamctl is the operator's client of streamd: it publishes and
// tails events over gRPC, shows the journal, and edits a consumer's offsets
// store (offsets and filters) on disk.
//
// Exit codes: 0 success, 1 an error from the server or the store, 2 a usage
// error (bad flags or arguments, unknown command).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/streamd/streamd/internal/buildinfo"
)

func main() { os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr)) }

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	return usagef("%v (see '%s --help')", err, c.Command.HelpName)
}

// run executes streamctl with args and returns its exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	err := app.Run(args)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "streamctl: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	cli.VersionPrinter = printVersion
	app := &cli.App{
		Name:                 "streamctl",
		Usage:                "publish, tail and inspect streamd events; edit consumer offsets and filters",
		Version:              buildinfo.Read().String(),
		Reader:               stdin,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		ExitErrHandler:       func(*cli.Context, error) {}, // run maps errors to exit codes
		OnUsageError:         onUsageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:7070", EnvVars: []string{"STREAMD_ADDR"}, Usage: "gRPC address (host:port) of a streamd, or of a service that mounts the admin API (offsets, filters, consumers)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "output format: table, or json (one JSON object per line)"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "deadline of each unary call (tail streams have none)"},
			&cli.StringFlag{Name: "tls-ca", EnvVars: []string{"STREAMD_TLS_CA"}, Usage: "PEM CA certificates to verify the server with; enables TLS"},
			&cli.StringFlag{Name: "tls-cert", EnvVars: []string{"STREAMD_TLS_CERT"}, Usage: "PEM client certificate for mTLS (with --tls-key); enables TLS"},
			&cli.StringFlag{Name: "tls-key", EnvVars: []string{"STREAMD_TLS_KEY"}, Usage: "PEM private key of --tls-cert"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"STREAMD_TOKEN"}, Usage: "bearer token, sent as 'authorization: Bearer TOKEN' metadata"},
		},
		Before: func(c *cli.Context) error {
			switch o := c.String("output"); o {
			case "table", "json":
				return nil
			default:
				return usagef("--output %q: want table or json", o)
			}
		},
		Action: unknownCommand,
		Commands: []*cli.Command{
			journalCommand(),
			publishCommand(),
			tailCommand(),
			streamsCommand(),
			offsetsCommand(),
			filtersCommand(),
			consumersCommand(),
			aggregatesCommand(),
			primaryCommand(),
			stateCommand(),
			interestCommand(),
			versionCommand(),
			completionCommand(),
		},
	}
	setUsageErrors(app.Commands)
	return app
}

// setUsageErrors makes every command report a flag error in one line with
// the usage hint (onUsageError), not with its whole help.
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = onUsageError
		}
		setUsageErrors(c.Subcommands)
	}
}

// unknownCommand is the action of commands that only group subcommands.
func unknownCommand(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("unknown command %q (see '%s --help')", c.Args().First(), c.Command.HelpName)
	}
	if c.Command.Name == "" {
		return cli.ShowAppHelp(c)
	}
	return cli.ShowSubcommandHelp(c)
}

func noArgs(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("%s takes no arguments, got %q", c.Command.HelpName, c.Args().First())
	}
	return nil
}

// group is a command that only holds subcommands.
func group(name, usage string, subs ...*cli.Command) *cli.Command {
	return &cli.Command{Name: name, Usage: usage, Subcommands: subs, Action: unknownCommand}
}

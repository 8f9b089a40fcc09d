package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/awssg"
)

// newAWSFirewall builds firewall aws-sg from [firewall.aws]; credentials come from the AWS SDK's
// standard chain, never from sesame's configuration.
func newAWSFirewall(ctx context.Context, a *config.AWS, log *slog.Logger) (firewall.Backend, error) {
	if a == nil {
		return nil, errors.New("aws-sg firewall: no [firewall.aws] section")
	}
	c, err := awssg.NewClient(ctx, a.Region, a.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("aws-sg firewall: %w", err)
	}
	b, err := awssg.New(awssg.Options{Groups: a.SecurityGroups, Client: c, Owner: a.Owner, MaxRules: a.MaxRules, Log: log})
	if err != nil {
		return nil, fmt.Errorf("aws-sg firewall: %w", err)
	}
	return b, nil
}

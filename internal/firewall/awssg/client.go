package awssg

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// NewClient returns an EC2 client for region with credentials from the SDK's standard chain
// (environment, shared config and credentials files, web identity, the instance's role through
// IMDS); endpoint, when set, replaces EC2's (a VPC endpoint, or a test double). The SDK's own
// retries are off: the backend retries itself. extra are more load options (tests).
func NewClient(ctx context.Context, region, endpoint string, extra ...func(*config.LoadOptions) error) (*ec2.Client, error) {
	opts := append([]func(*config.LoadOptions) error{
		config.WithRegion(region),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}, extra...)
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws-sg: load AWS configuration: %w", err)
	}
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	}), nil
}

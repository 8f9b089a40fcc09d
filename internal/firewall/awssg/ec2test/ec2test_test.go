package ec2test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

func client(s *Server) *ec2.Client {
	return ec2.New(ec2.Options{Region: Region, BaseEndpoint: aws.String(s.URL()), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, "")})
}

// TestThroughSDK: the SDK reads the double's answers and errors, and its paginator walks the
// double's pages.
func TestThroughSDK(t *testing.T) {
	const g = "sg-0123456789abcdef0"
	s := New(g)
	defer s.Close()
	c := client(s)
	ctx := context.Background()
	for i := range 12 {
		s.AddRule(Rule{GroupID: g, Proto: "tcp", FromPort: 22, ToPort: 22, CIDR: fmt.Sprintf("198.18.0.%d/32", i+1), Tags: map[string]string{"k": "v"}})
	}
	p := ec2.NewDescribeSecurityGroupRulesPaginator(c, &ec2.DescribeSecurityGroupRulesInput{
		MaxResults: aws.Int32(5), Filters: []types.Filter{{Name: aws.String("tag:k"), Values: []string{"v"}}}})
	n, pages := 0, 0
	for p.HasMorePages() && pages < 10 {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(out.SecurityGroupRules)
		pages++
	}
	if n != 12 || pages != 3 {
		t.Fatalf("%d rules in %d pages, want 12 in 3", n, pages)
	}
	s.Throttle(1)
	_, err := c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(g), SecurityGroupRuleIds: []string{"sgr-1"}})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "RequestLimitExceeded" {
		t.Fatalf("throttled call: %v, want RequestLimitExceeded", err)
	}
	_, err = c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(g), SecurityGroupRuleIds: []string{"sgr-1"}})
	if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidSecurityGroupRuleId.NotFound" {
		t.Fatalf("unknown rule: %v, want InvalidSecurityGroupRuleId.NotFound", err)
	}
	bad := ec2.New(ec2.Options{Region: Region, BaseEndpoint: aws.String(s.URL()), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider("AKIDOTHER", "x", "")})
	if _, err := bad.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{}); !errors.As(err, &ae) || ae.ErrorCode() != "AuthFailure" || s.Unsigned() != 1 {
		t.Fatalf("other credentials: %v (unsigned %d), want AuthFailure", err, s.Unsigned())
	}
}
